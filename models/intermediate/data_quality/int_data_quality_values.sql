{#- The values the data-quality checks screen: numeric DHIS2 data values as reported (derived
    and pseudo data elements are not screened: they are computed from these), with what the
    checks need: the period's type, its year (the Yearly period it rolls into, so a week
    straddling New Year belongs to the year holding its fourth day) and its number within the
    year (week or month) for seasonal comparison; null for other period types.
    A table, with one series_id per series (source, data element, category and attribute
    option combo, org unit, period type): the checks join the values to themselves, and
    PostgreSQL plans such joins well only over a stored table and one equality key. -#}
{{ config(materialized='table') }}
with data_values as (

    select
        v.source_name as source,
        v.data_element_id,
        v.category_option_combo_id,
        v.attribute_option_combo_id,
        v.org_unit_id,
        v.period_id,
        v.value_numeric as value
    from {{ ref('stg_dhis2__data_values') }} as v
    where v.value_numeric is not null

)

select
    md5(concat_ws('|', v.source, v.data_element_id, v.category_option_combo_id,
        v.attribute_option_combo_id, v.org_unit_id, p.period_type)) as series_id,
    v.source,
    v.data_element_id,
    v.category_option_combo_id,
    v.attribute_option_combo_id,
    v.org_unit_id,
    v.period_id,
    p.period_type,
    p.start_date as period_start_date,
    y.target_period_id as year_period_id,
    cast(y.target_period_id as integer) as period_year,
    case p.period_type
        when 'Weekly' then cast(split_part(v.period_id, 'W', 2) as integer)
        when 'Monthly' then cast(substr(v.period_id, 5, 2) as integer)
    end as period_of_year,
    coalesce(de.aggregation_type, 'SUM') as aggregation_type,
    v.value
from data_values as v
join {{ ref('int_periods') }} as p on p.period_id = v.period_id
left join {{ ref('int_period_rollups') }} as y
    on y.period_id = v.period_id
    and y.target_period_type = 'Yearly'
left join {{ ref('int_data_elements') }} as de on de.data_element_id = v.data_element_id
