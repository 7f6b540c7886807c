{#- No equation of the public layer (a total and its parts along org units, periods or
    disaggregations) has exactly one masked cell: subtracting the published cells from the
    published total would give it back. Returns the offending groups.

    Only a group holding a masked cell can have exactly one, so the groups listed are those of
    the masked cells (hp_suppression_members), not every group of the public layer. A cell is
    masked when int_suppression_masked_cells holds it (int_suppression_masks, which the
    public tables read, is every cell left-joined to it): the test joins that short table,
    not the one row per public cell (112 million at L scale, where joining it ran DuckDB out
    of memory under an 8 GB limit). -#}
{%- set masked = ref('int_suppression_masked_cells') %}
select g.family, g.series_id, g.anchor_org_unit_key, g.anchor_period_key, g.anchor_period_type_key
from (
    {{ hp_suppression_members(
        'select cell_id from ' ~ masked,
        ref('int_suppression_cell_keys'),
        ref('int_suppression_link_keys'),
    ) }}
) as g
left join {{ masked }} as m on m.cell_id = g.cell_id
group by {{ hp_suppression_group_key('g') }}
having count(m.cell_id) = 1
   and count(*) > 1
