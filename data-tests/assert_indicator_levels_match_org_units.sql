-- Every indicator value's org_unit_level is the level of its org unit in the hierarchy.
select v.indicator_id, v.org_unit_id, v.org_unit_level, o.level
from {{ ref('indicator_values') }} as v
join {{ ref('dim_org_unit') }} as o on o.org_unit_id = v.org_unit_id
where v.org_unit_level <> o.level
