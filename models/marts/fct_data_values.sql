{#- The one long fact every indicator reads: one row per data element, category and attribute
    option combo, org unit, period and source. Kept by period year (period_year, the year a
    DHIS2 period id starts with): a build rewrites only the years whose rows changed, and on
    PostgreSQL and Spark each year is a partition (macros/period_partitions.sql). -#}
{{ config(**hp_period_partition_config()) }}

{%- set columns = [
    'data_element_id', 'category_option_combo_id', 'attribute_option_combo_id', 'org_unit_id',
    'period_id', 'period_type', 'period_start_date', 'period_end_date', 'value', 'value_text',
    'source', 'data_set_id', 'is_followup', 'is_derived', 'source_updated_at', 'landed_at',
    'period_year',
] %}

with fresh as (

    select
        v.*,
        cast(substr(v.period_id, 1, 4) as integer) as period_year
    from (
        select * from {{ ref('int_data_values_unified') }}
        union all
        select * from {{ ref('int_alert_data_values') }}
    ) as v

){{ ',' if is_incremental() }}

{% if is_incremental() -%}
{{ hp_changed_years_only('fresh', columns) }}
{%- else -%}
select {{ columns | join(', ') }} from fresh
{%- endif %}
