{#- Which coarser periods each period rolls up into (and itself, so every period type at or
    above a value's own is reachable with one join).
    A period rolls into a coarser one that contains it. A week or bi-week rolls into the month,
    quarter or year that holds its fourth day (start + anchor_days), DHIS2's rule for periods
    that straddle a boundary. Weeks of one flavour never roll into weeks of another; ISO weeks
    roll into ISO bi-weeks. -#}
{{ config(materialized='table') }}

with periods as (

    select
        p.period_id,
        p.period_type,
        p.start_date,
        p.end_date,
        t.frequency_order,
        t.anchor_days > 0 as is_anchored,
        p.start_date + t.anchor_days as anchor_day
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
      and (
          -- days, months, quarters ...: the target must contain the whole period
          (not p.is_anchored and target.start_date <= p.start_date and target.end_date >= p.end_date)
          -- weeks and bi-weeks: by their fourth day, into periods that are not weeks
          or (p.is_anchored and not target.is_anchored)
          or (p.period_type = 'Weekly' and target.period_type = 'BiWeekly')
      )

)

select period_id, period_type, period_id as target_period_id, period_type as target_period_type
from periods
union all
select period_id, period_type, target_period_id, target_period_type
from coarser
