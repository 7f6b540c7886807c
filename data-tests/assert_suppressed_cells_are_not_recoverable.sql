{#- No equation of the public layer (a total and its parts along org units, periods or
    disaggregations) has exactly one masked cell: subtracting the published cells from the
    published total would give it back. Returns the offending groups. -#}
select e.group_id, e.family
from {{ ref('int_suppression_equations') }} as e
join {{ ref('int_suppression_masks') }} as m on m.cell_id = e.cell_id
group by e.group_id, e.family
having sum(case when m.is_masked then 1 else 0 end) = 1
   and count(*) > 1
