{#- Data values aggregated to every org-unit level and every period type at or above their
    own, per data element, category option combo and attribute option combo, the way DHIS2
    analytics aggregates them: first over time within each reporting org unit, then over the
    org units below each ancestor, each step by the data element's aggregation type.

    SUM                    sum over time, sum over org units
    AVERAGE                mean of all values (time and org units)
    AVERAGE_SUM_ORG_UNIT   mean over time, sum over org units (population, stock levels)
    LAST (LAST_IN_PERIOD)  latest value in time, sum over org units
    LAST_AVERAGE_ORG_UNIT  latest value in time, mean over org units
    MIN / MAX / COUNT      over all values

    The sums run on decimal(38, 9), exactly: summing doubles in parallel threads adds them in
    no fixed order, so the last bits of a total (and a ratio built on it) changed from one
    build of the same data to the next. The published value is a double again. -#}
{{ config(materialized='table') }}

with data_values as (

    select
        f.data_element_id,
        f.category_option_combo_id,
        f.attribute_option_combo_id,
        f.org_unit_id,
        f.period_id,
        f.period_start_date,
        cast(f.value as decimal(38, 9)) as value,
        coalesce(de.aggregation_type, 'SUM') as aggregation_type
    from {{ ref('int_data_values_unified') }} as f
    left join {{ ref('int_data_elements') }} as de on de.data_element_id = f.data_element_id
    where f.value is not null

),

in_target_periods as (

    select
        v.*,
        r.target_period_id,
        r.target_period_type
    from data_values as v
    join {{ ref('int_period_rollups') }} as r on r.period_id = v.period_id

),

over_time as (

    select
        data_element_id,
        category_option_combo_id,
        attribute_option_combo_id,
        org_unit_id,
        target_period_id as period_id,
        target_period_type as period_type,
        aggregation_type,
        sum(value) as sum_value,
        count(*) as value_count,
        min(value) as min_value,
        max(value) as max_value,
        -- the value of the latest period: an aggregate, not a window over every value and
        -- target period (at 10 million values that window sorted and spilled for minutes)
        {{ hp_value_of_latest('value', 'period_start_date') }} as last_value
    from in_target_periods
    group by 1, 2, 3, 4, 5, 6, 7

),

over_org_units as (

    select
        t.data_element_id,
        t.category_option_combo_id,
        t.attribute_option_combo_id,
        a.ancestor_id as org_unit_id,
        a.ancestor_level as org_unit_level,
        t.period_id,
        t.period_type,
        t.aggregation_type,
        sum(t.sum_value) as sum_value,
        sum(t.value_count) as value_count,
        min(t.min_value) as min_value,
        max(t.max_value) as max_value,
        sum(cast(t.sum_value / t.value_count as decimal(38, 9))) as sum_of_means,
        sum(t.last_value) as sum_of_last,
        sum(t.last_value) / count(t.last_value) as mean_of_last
    from over_time as t
    join {{ ref('int_org_unit_ancestors') }} as a on a.org_unit_id = t.org_unit_id
    group by 1, 2, 3, 4, 5, 6, 7, 8

)

select
    data_element_id,
    category_option_combo_id,
    attribute_option_combo_id,
    org_unit_id,
    org_unit_level,
    period_id,
    period_type,
    aggregation_type,
    value_count,
    cast(case aggregation_type
        when 'AVERAGE' then sum_value / value_count
        when 'AVERAGE_SUM_ORG_UNIT' then sum_of_means
        when 'LAST' then sum_of_last
        when 'LAST_IN_PERIOD' then sum_of_last
        when 'LAST_AVERAGE_ORG_UNIT' then mean_of_last
        when 'MIN' then min_value
        when 'MAX' then max_value
        when 'COUNT' then value_count
        else sum_value
    end as {{ hp_type_double() }}) as value
from over_org_units
