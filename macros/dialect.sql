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

{#- Indexes for a model's `indexes` config on PostgreSQL only. DuckDB plans its joins as hash
    joins and gains nothing from them, while building an ART index over millions of rows costs
    time and memory (dbt-duckdb creates what the config asks for). -#}
{% macro hp_indexes(indexes) -%}
    {{ return(adapter.dispatch('hp_indexes', 'healthpipe')(indexes)) }}
{%- endmacro %}

{% macro default__hp_indexes(indexes) -%}
    {{ return([]) }}
{%- endmacro %}

{% macro postgres__hp_indexes(indexes) -%}
    {{ return(indexes) }}
{%- endmacro %}

{#- A pre-hook for a model that was a table with indexes in an older version and is now a
    view: DuckDB will not rename a table that has indexes, and dbt renames the old relation
    out of the way before it drops it, so the indexes go first. -#}
{% macro hp_drop_indexes_of_old_table(relation) -%}
    {{ return(adapter.dispatch('hp_drop_indexes_of_old_table', 'healthpipe')(relation)) }}
{%- endmacro %}

{% macro default__hp_drop_indexes_of_old_table(relation) -%}
{%- endmacro %}

{% macro duckdb__hp_drop_indexes_of_old_table(relation) -%}
    {%- if execute -%}
        {%- set existing = load_relation(relation) -%}
        {%- if existing is not none and existing.is_table -%}
            {%- do drop_indexes_on_relation(existing) -%}
        {%- endif -%}
    {%- endif -%}
{%- endmacro %}

{#- In an aggregate: `value` of the row with the greatest `order_by` (ties: the greatest
    value, so that the result does not depend on the order rows arrive in). -#}
{% macro hp_value_of_latest(value, order_by) -%}
    {{ return(adapter.dispatch('hp_value_of_latest', 'healthpipe')(value, order_by)) }}
{%- endmacro %}

{% macro default__hp_value_of_latest(value, order_by) -%}
    (array_agg({{ value }} order by {{ order_by }} desc, {{ value }} desc))[1]
{%- endmacro %}

{% macro duckdb__hp_value_of_latest(value, order_by) -%}
    arg_max({{ value }}, struct_pack(o := {{ order_by }}, v := {{ value }}))
{%- endmacro %}
