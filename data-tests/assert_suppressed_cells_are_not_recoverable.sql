{#- No equation of the public layer (a total and its parts along org units, periods or
    disaggregations) has exactly one masked cell: subtracting the published cells from the
    published total would give it back. Returns the offending groups.

    Only a group holding a masked cell can have exactly one, so the groups listed are those of
    the masked cells (hp_suppression_members), not every group of the public layer. -#}
{%- set masks = ref('int_suppression_masks') %}
select g.family, g.series_id, g.anchor_org_unit_id, g.anchor_period_id, g.anchor_period_type
from (
    {{ hp_suppression_members(
        'select cell_id from ' ~ masks ~ ' where is_masked',
        ref('int_suppression_cells'),
        ref('int_suppression_period_links'),
    ) }}
) as g
join {{ masks }} as m on m.cell_id = g.cell_id
group by g.family, g.series_id, g.anchor_org_unit_id, g.anchor_period_id, g.anchor_period_type
having sum(case when m.is_masked then 1 else 0 end) = 1
   and count(*) > 1
