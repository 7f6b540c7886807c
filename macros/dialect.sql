{#- Dialect differences between DuckDB and PostgreSQL, in one place (adapter.dispatch). -#}

{#- A number from text, or null when the text is not a number (never an error). -#}
{% macro hp_try_cast_double(expression) -%}
    {{ return(adapter.dispatch('hp_try_cast_double', 'healthpipe')(expression)) }}
{%- endmacro %}

{% macro default__hp_try_cast_double(expression) -%}
    case when {{ expression }} ~ '^\s*[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?\s*$'
         then cast({{ expression }} as double precision) end
{%- endmacro %}

{% macro duckdb__hp_try_cast_double(expression) -%}
    try_cast({{ expression }} as double)
{%- endmacro %}

{#- A timestamp from DHIS2's ISO text (2025-02-03T08:00:00.000), or null. -#}
{% macro hp_try_cast_timestamp(expression) -%}
    {{ return(adapter.dispatch('hp_try_cast_timestamp', 'healthpipe')(expression)) }}
{%- endmacro %}

{% macro default__hp_try_cast_timestamp(expression) -%}
    case when {{ expression }} ~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2})?)?'
         then cast(replace(substr({{ expression }}, 1, 19), 'T', ' ') as timestamp) end
{%- endmacro %}

{% macro duckdb__hp_try_cast_timestamp(expression) -%}
    try_cast(replace(substr({{ expression }}, 1, 19), 'T', ' ') as timestamp)
{%- endmacro %}

{#- One row per day, column `day`, from start to end inclusive (ISO date strings). -#}
{% macro hp_day_spine(start_date, end_date) -%}
    {{ return(adapter.dispatch('hp_day_spine', 'healthpipe')(start_date, end_date)) }}
{%- endmacro %}

{% macro default__hp_day_spine(start_date, end_date) -%}
    select cast(series.day as date) as day
    from generate_series(date '{{ start_date }}', date '{{ end_date }}', interval '1 day') as series(day)
{%- endmacro %}

{% macro duckdb__hp_day_spine(start_date, end_date) -%}
    select cast(generate_series as date) as day
    from generate_series(date '{{ start_date }}', date '{{ end_date }}', interval 1 day)
{%- endmacro %}

{#- Each string of a JSON array held as text, one row per element (in a select list). -#}
{% macro hp_unnest_json_text_array(expression) -%}
    {{ return(adapter.dispatch('hp_unnest_json_text_array', 'healthpipe')(expression)) }}
{%- endmacro %}

{% macro default__hp_unnest_json_text_array(expression) -%}
    jsonb_array_elements_text(cast({{ expression }} as jsonb))
{%- endmacro %}

{% macro duckdb__hp_unnest_json_text_array(expression) -%}
    unnest(from_json({{ expression }}, '["VARCHAR"]'))
{%- endmacro %}

{#- The text at a path inside a JSON document held as text; path is a list of keys,
    e.g. hp_json_text('payload', ['household', 'members']). Null when absent. -#}
{% macro hp_json_text(expression, path) -%}
    {{ return(adapter.dispatch('hp_json_text', 'healthpipe')(expression, path)) }}
{%- endmacro %}

{% macro default__hp_json_text(expression, path) -%}
    (cast({{ expression }} as jsonb) #>> '{ {{- path | join(',') -}} }')
{%- endmacro %}

{% macro duckdb__hp_json_text(expression, path) -%}
    json_extract_string({{ expression }}, '$.{{ path | map('tojson') | join('.') }}')
{%- endmacro %}

{#- Text ordered byte by byte, the same on every engine: PostgreSQL sorts by the database's
    collation (en_US orders case and punctuation differently), DuckDB by bytes. Used where an
    order decides an outcome (which complementary cell is masked). -#}
{% macro hp_bytewise(expression) -%}
    {{ return(adapter.dispatch('hp_bytewise', 'healthpipe')(expression)) }}
{%- endmacro %}

{% macro default__hp_bytewise(expression) -%}
    {{ expression }}
{%- endmacro %}

{% macro postgres__hp_bytewise(expression) -%}
    {{ expression }} collate "C"
{%- endmacro %}
