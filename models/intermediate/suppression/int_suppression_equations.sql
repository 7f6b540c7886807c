{#- The sums a reader of the public layer can take, as groups of cells: one row per cell and
    group. Every group is an equation "total = sum of parts"; when exactly one cell of a group
    is masked, the published others give it away (int_suppression_masks masks another).

    org         a parent org unit's value and its children's values, per series and period
                (the parent's own reported value counts among the parts: it is in its total);
    period      a period's value and the values of one finer period type that roll into it
                (int_suppression_period_links), per series and org unit;
    combo       the values of one data element in one org unit and period over its category
                and attribute option combos (its total is published as indicator operands).

    A total that is not itself a cell of the same public table (a parent of a facility-level
    data value, a year of weekly surveillance counts) is still taken as published: another
    public table may print it. Such a group holds only the parts.

    A view, for review: the build never lists every group. Masking and its data test list only
    the groups of the cells they look at (hp_suppression_members), which at national scale is
    a small part of tens of millions of rows. -#}
{{ config(materialized='view', pre_hook="{{ hp_drop_indexes_of_old_table(this) }}") }}

with keys as (

    select key_kind, key_text, key_number from {{ ref('int_suppression_keys') }}

),

members as (

    select
        m.family,
        m.series_id,
        org_unit.key_text as anchor_org_unit_id,
        period.key_text as anchor_period_id,
        coalesce(period_type.key_text, '') as anchor_period_type,
        m.cell_id
    from (
        {{ hp_suppression_members(
            'select cell_id from ' ~ ref('int_suppression_cell_keys'),
            ref('int_suppression_cell_keys'),
            ref('int_suppression_link_keys'),
        ) }}
    ) as m
    left join keys as org_unit
        on org_unit.key_kind = 'org_unit' and org_unit.key_number = m.anchor_org_unit_key
    left join keys as period
        on period.key_kind = 'period' and period.key_number = m.anchor_period_key
    left join keys as period_type
        on period_type.key_kind = 'period_type' and period_type.key_number = m.anchor_period_type_key

)

select
    md5(concat_ws('|', family, cast(series_id as {{ hp_type_text() }}), anchor_org_unit_id,
                  anchor_period_id, anchor_period_type)) as group_id,
    family,
    series_id,
    anchor_org_unit_id,
    anchor_period_id,
    anchor_period_type,
    cell_id
from members
