{#- Cross-sectoral returns (WASH, school health, nutrition screening) per source, facility
    catchment and quarter. -#}
select
    c.source_name,
    o.org_unit_id,
    c.period_id,
    c.households,
    c.households_safe_water,
    c.households_improved_sanitation,
    c.school_health_sessions_planned,
    c.school_health_sessions_held,
    c.children_6_59m_screened_muac,
    c.sam_referred,
    c.mam_referred
from {{ ref('stg_tabular__cross_sectoral') }} as c
join {{ ref('int_org_units') }} as o on o.code = c.org_unit_code
