{#- Consistency over time (WHO Data Quality Review): each series' yearly total (source, data
    element summed over its disaggregations, org unit) against the mean of the same series'
    totals in up to healthpipe_dq_consistency_years earlier years; flagged when the ratio
    current / mean is more than healthpipe_dq_consistency_tolerance (33%) away from 1.
    Only data elements summed over time (aggregation type SUM) have meaningful totals. Only
    complete years compare: a year counts for a period type when the warehouse holds values
    for every one of its periods of that type (so a partly loaded first or current year is
    not mistaken for a drop). A mean of 0 with a non-zero total is flagged (ratio null). -#}
{{ config(materialized='table') }}

with data_values as (

    select * from {{ ref('int_data_quality_values') }}
    where aggregation_type = 'SUM' and period_year is not null

),

periods_in_year as (

    select period_type, target_period_id as year_period_id, count(*) as periods
    from {{ ref('int_period_rollups') }}
    where target_period_type = 'Yearly'
    group by period_type, target_period_id

),

periods_loaded as (

    select period_type, year_period_id, count(distinct period_id) as periods
    from data_values
    group by period_type, year_period_id

),

complete_years as (

    select l.period_type, l.year_period_id
    from periods_loaded as l
    join periods_in_year as y
        on y.period_type = l.period_type
        and y.year_period_id = l.year_period_id
    where l.periods = y.periods

),

yearly as (

    select
        v.source,
        v.data_element_id,
        v.org_unit_id,
        v.period_type,
        v.year_period_id,
        max(v.period_year) as period_year,
        sum(v.value) as yearly_value
    from data_values as v
    join complete_years as c
        on c.period_type = v.period_type
        and c.year_period_id = v.year_period_id
    group by v.source, v.data_element_id, v.org_unit_id, v.period_type, v.year_period_id

),

compared as (

    select
        cur.source,
        cur.data_element_id,
        cur.org_unit_id,
        cur.period_type,
        cur.year_period_id as period_id,
        cur.yearly_value,
        count(*) as reference_years,
        {{ hp_ordered_agg('avg', 'ref.yearly_value') }} as reference_mean
    from yearly as cur
    join yearly as ref
        on ref.source = cur.source
        and ref.data_element_id = cur.data_element_id
        and ref.org_unit_id = cur.org_unit_id
        and ref.period_type = cur.period_type
        and ref.period_year < cur.period_year
        and ref.period_year >= cur.period_year - {{ var('healthpipe_dq_consistency_years') }}
    group by cur.source, cur.data_element_id, cur.org_unit_id, cur.period_type,
        cur.year_period_id, cur.yearly_value

)

select
    source,
    data_element_id,
    org_unit_id,
    period_type as data_period_type,
    period_id,
    yearly_value,
    reference_years,
    reference_mean,
    case when reference_mean <> 0 then yearly_value / reference_mean end as consistency_ratio,
    case
        when reference_mean <> 0
            then abs(yearly_value / reference_mean - 1) > {{ var('healthpipe_dq_consistency_tolerance') }}
        else yearly_value <> 0
    end as is_inconsistent
from compared
