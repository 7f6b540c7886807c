{#- Every complete period of every type in the calendar's years, with inclusive dates.
    The day spine runs one year wider than the calendar's years, so only periods cut by the
    spine's edges (never one of the calendar's own years) are left out. -#}
{{ config(materialized='table') }}

with bounds as (

    select min(day) as first_day, max(day) as last_day
    from {{ ref('int_calendar_days') }}

),

periods as (

    select
        period_id,
        period_type,
        min(day) as start_date,
        max(day) as end_date
    from {{ ref('int_calendar_periods') }}
    group by period_id, period_type

)

select periods.*
from periods
cross join bounds
where periods.start_date > bounds.first_day
  and periods.end_date < bounds.last_day
