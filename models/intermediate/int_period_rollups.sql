{#- Which coarser periods each period rolls up into (and itself, so every period type at or
    above a value's own is reachable with one join).
    A period rolls into a coarser one that contains it; a week rolls into the month, quarter or
    year that holds its fourth day (start + 3 days), which is DHIS2's rule for straddling weeks.
    Weeks of one flavour never roll into weeks of another. -#}
{{ config(materialized='table') }}

with periods as (

    select
        p.period_id,
        p.period_type,
        p.start_date,
        p.end_date,
        t.frequency_order,
        t.is_weekly,
        case when t.is_weekly then p.start_date + 3 else p.start_date end as anchor_day
    from {{ ref('int_periods') }} as p
    join {{ ref('period_types') }} as t on t.period_type = p.period_type

),

coarser as (

    select
        p.period_id,
        p.period_type,
        target.period_id as target_period_id,
        target.period_type as target_period_type
    from periods as p
    join {{ ref('int_calendar_periods') }} as c on c.day = p.anchor_day
    join periods as target
        on target.period_id = c.period_id
        and target.period_type = c.period_type
    where target.frequency_order > p.frequency_order
      and not target.is_weekly
      and (p.is_weekly or target.end_date >= p.end_date)

)

select period_id, period_type, period_id as target_period_id, period_type as target_period_type
from periods
union all
select period_id, period_type, target_period_id, target_period_type
from coarser
