-- A period may roll up into at most one period of each coarser type; two would double-count
-- its values in indicator_values (the straddling-week rule must pick exactly one).
select period_id, target_period_type, count(*) as targets
from {{ ref('int_period_rollups') }}
group by period_id, target_period_type
having count(*) > 1
