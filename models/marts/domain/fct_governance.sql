{#- Facility governance returns: one row per source, facility and quarter. -#}
select
    g.source_name,
    o.org_unit_id,
    g.period_id,
    g.currency,
    g.hmc_meetings_planned,
    g.hmc_meetings_held,
    g.budget_allocated,
    g.budget_spent,
    g.is_service_charter_displayed
from {{ ref('stg_tabular__governance') }} as g
join {{ ref('int_org_units') }} as o on o.code = g.org_unit_code
