{#- Spark (dbt-spark, session method or Thrift) versions of healthpipe's dialect macros, and
    the dispatched macros the Spark port added. The default__ of each added macro renders the
    text the models had before, so DuckDB and PostgreSQL compile as they did. -#}

{% macro spark__hp_try_cast_double(expression) -%}
    try_cast({{ expression }} as double)
{%- endmacro %}

{% macro spark__hp_try_cast_timestamp(expression) -%}
    try_cast(replace(substr({{ expression }}, 1, 19), 'T', ' ') as timestamp)
{%- endmacro %}

{% macro spark__hp_day_spine(start_date, end_date) -%}
    select explode(sequence(date '{{ start_date }}', date '{{ end_date }}', interval 1 day)) as day
{%- endmacro %}

{% macro spark__hp_unnest_json_text_array(expression) -%}
    explode(from_json({{ expression }}, 'array<string>'))
{%- endmacro %}

{% macro spark__hp_json_text(expression, path) -%}
    get_json_object({{ expression }}, '$.{{ path | join('.') }}')
{%- endmacro %}

{% macro spark__hp_analyze(relation) -%}
    analyze table {{ relation }} compute statistics
{%- endmacro %}

{% macro spark__hp_hours_between(start_at, end_at) -%}
    {#- 3600.0 would be a DECIMAL literal on Spark: the quotient cut to 6 decimals -#}
    (timestampdiff(SECOND, {{ start_at }}, {{ end_at }}) / cast(3600 as double))
{%- endmacro %}

{% macro spark__hp_hl7_timestamp(expression) -%}
    (case when {{ expression }} rlike {{ hp_hl7_timestamp_pattern() }}
          then try_to_timestamp(rpad(regexp_extract({{ expression }}, '^[0-9]+', 0), 14, '0'), 'yyyyMMddHHmmss')
               + make_dt_interval(0, 0, 0, coalesce(try_cast(concat('0', regexp_extract({{ expression }}, '[.][0-9]+', 0)) as double), 0))
               - make_dt_interval(0, 0, cast({{ hp_hl7_offset_minutes(expression) }} as int), 0)
     end)
{%- endmacro %}

{#- New: type names -#}
{% macro hp_type_text() -%}{{ return(adapter.dispatch('hp_type_text', 'healthpipe')()) }}{%- endmacro %}
{% macro default__hp_type_text() -%}varchar{%- endmacro %}
{% macro spark__hp_type_text() -%}string{%- endmacro %}

{% macro hp_type_double() -%}{{ return(adapter.dispatch('hp_type_double', 'healthpipe')()) }}{%- endmacro %}
{% macro default__hp_type_double() -%}double precision{%- endmacro %}
{% macro spark__hp_type_double() -%}double{%- endmacro %}

{#- New: every match replaced (PostgreSQL needs the 'g' flag; in Spark a 4th argument is a
    position, and 'g' silently makes the result NULL). -#}
{% macro hp_regexp_replace_all(expression, pattern, replacement) -%}
    {{ return(adapter.dispatch('hp_regexp_replace_all', 'healthpipe')(expression, pattern, replacement)) }}
{%- endmacro %}
{% macro default__hp_regexp_replace_all(expression, pattern, replacement) -%}
    regexp_replace({{ expression }}, {{ pattern }}, {{ replacement }}, 'g')
{%- endmacro %}
{% macro spark__hp_regexp_replace_all(expression, pattern, replacement) -%}
    regexp_replace({{ expression }}, {{ pattern }}, {{ replacement }})
{%- endmacro %}

{#- New: one row per part of a delimited string (in a select list). -#}
{% macro hp_split_to_rows(expression, delimiter) -%}
    {{ return(adapter.dispatch('hp_split_to_rows', 'healthpipe')(expression, delimiter)) }}
{%- endmacro %}
{% macro default__hp_split_to_rows(expression, delimiter) -%}
    unnest(string_to_array({{ expression }}, '{{ delimiter }}'))
{%- endmacro %}
{% macro spark__hp_split_to_rows(expression, delimiter) -%}
    explode(split({{ expression }}, '[{{ delimiter }}]'))
{%- endmacro %}

{#- New: an aggregate whose input order is fixed (float sums in a fixed order on DuckDB/PG);
    Spark has no ordered aggregates: the order is dropped (results may differ in the last bits). -#}
{% macro hp_ordered_agg(func, expression) -%}
    {{ return(adapter.dispatch('hp_ordered_agg', 'healthpipe')(func, expression)) }}
{%- endmacro %}
{% macro default__hp_ordered_agg(func, expression) -%}
    {{ func }}({{ expression }} order by {{ expression }})
{%- endmacro %}
{% macro spark__hp_ordered_agg(func, expression) -%}
    {{ func }}({{ expression }})
{%- endmacro %}

{#- New: ISO day of week, 1 = Monday. -#}
{% macro hp_iso_dow(expression) -%}
    {{ return(adapter.dispatch('hp_iso_dow', 'healthpipe')(expression)) }}
{%- endmacro %}
{% macro default__hp_iso_dow(expression) -%}extract(isodow from {{ expression }}){%- endmacro %}
{% macro spark__hp_iso_dow(expression) -%}extract(dayofweek_iso from {{ expression }}){%- endmacro %}

{#- A decimal(38, 9) as text with all nine digits of its scale (0.000000000; Spark's own cast
    writes 0E-9). -#}
{% macro hp_decimal_text(expression) -%}
    {{ return(adapter.dispatch('hp_decimal_text', 'healthpipe')(expression)) }}
{%- endmacro %}
{% macro default__hp_decimal_text(expression) -%}
    cast({{ expression }} as {{ hp_type_text() }})
{%- endmacro %}
{% macro spark__hp_decimal_text(expression) -%}
    {#- format_number writes every digit of the scale, with thousands separators; Java's
        format_string %f refuses Spark's Decimal -#}
    replace(format_number({{ expression }}, 9), ',', '')
{%- endmacro %}

{#- A temporary table built from a query, and its removal (Spark has temporary views, which it
    recomputes on every read unless cached). -#}
{% macro hp_create_temp_table(name, sql) -%}
    {{ return(adapter.dispatch('hp_create_temp_table', 'healthpipe')(name, sql)) }}
{%- endmacro %}
{% macro default__hp_create_temp_table(name, sql) -%}
    create temporary table {{ name }} as {{ sql }}
{%- endmacro %}
{% macro spark__hp_create_temp_table(name, sql) -%}
    cache table {{ name }} as {{ sql }}
{%- endmacro %}
{% macro hp_drop_temp_table(name) -%}
    {{ return(adapter.dispatch('hp_drop_temp_table', 'healthpipe')(name)) }}
{%- endmacro %}
{% macro default__hp_drop_temp_table(name) -%}
    drop table if exists {{ name }}
{%- endmacro %}
{% macro spark__hp_drop_temp_table(name) -%}
    drop view if exists {{ name }}
{%- endmacro %}

{% macro spark__hp_value_of_latest(value, order_by) -%}
    max_by({{ value }}, struct({{ order_by }}, {{ value }}))
{%- endmacro %}
