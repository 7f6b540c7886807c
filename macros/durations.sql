{#- Hours from one timestamp to another (fractional), null when either is null. -#}
{% macro hp_hours_between(start_at, end_at) -%}
    {{ return(adapter.dispatch('hp_hours_between', 'healthpipe')(start_at, end_at)) }}
{%- endmacro %}

{% macro default__hp_hours_between(start_at, end_at) -%}
    (extract(epoch from ({{ end_at }} - {{ start_at }})) / 3600.0)
{%- endmacro %}

{% macro duckdb__hp_hours_between(start_at, end_at) -%}
    (date_diff('second', {{ start_at }}, {{ end_at }}) / 3600.0)
{%- endmacro %}
