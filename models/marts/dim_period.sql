{#- DHIS2 periods of every type for the calendar's years, with inclusive start and end dates. -#}
select
    p.period_id,
    p.period_type,
    p.start_date,
    p.end_date,
    t.frequency_order,
    t.anchor_days > 0 as is_weekly
from {{ ref('int_periods') }} as p
join {{ ref('period_types') }} as t on t.period_type = p.period_type
