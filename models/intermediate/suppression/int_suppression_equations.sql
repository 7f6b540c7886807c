{#- The sums a reader of the public layer can take, as groups of cells: one row per cell and
    group. Every group is an equation "total = sum of parts"; when exactly one cell of a group
    is masked, the published others give it away (int_suppression_masks masks another).

    org         a parent org unit's value and its children's values, per series and period
                (the parent's own reported value counts among the parts: it is in its total);
    period      a period's value and the values of one finer period type that roll into it
                (int_period_rollups: weeks into months, months into quarters ...), per
                series and org unit: in pub_indicator_values for adjacent types
                (int_period_type_covers: the sums of a chain of adjacent types protect the
                sum that skips them), elsewhere for every pair of types;
    combo       the values of one data element in one org unit and period over its category
                and attribute option combos (its total is published as indicator operands).

    A total that is not itself a cell of the same public table (a parent of a facility-level
    data value, a year of weekly surveillance counts) is still taken as published: another
    public table may print it. Such a group holds only the parts. -#}
{{ config(
    materialized='table',
    indexes=[{'columns': ['group_id']}, {'columns': ['cell_id']}],
    post_hook="{{ hp_analyze(this) }}"
) }}

with cells as (

    select * from {{ ref('int_suppression_cells') }}

),

org_parts as (

    -- each cell is a part of its parent's group ...
    select
        'org' as family, c.table_name, c.measure, c.key_1, c.key_2, c.key_3, c.key_4,
        c.parent_id as anchor_org_unit_id, c.period_id as anchor_period_id,
        '' as anchor_period_type, c.cell_id
    from cells as c
    where c.parent_id is not null

),

period_parts as (

    select
        'period' as family, c.table_name, c.measure, c.key_1, c.key_2, c.key_3, c.key_4,
        c.org_unit_id as anchor_org_unit_id, r.target_period_id as anchor_period_id,
        c.period_type as anchor_period_type, c.cell_id
    from cells as c
    join {{ ref('int_period_rollups') }} as r
        on r.period_id = c.period_id
        and r.target_period_id <> r.period_id
    left join {{ ref('int_period_type_covers') }} as cover
        on cover.period_type = c.period_type
        and cover.target_period_type = r.target_period_type
    -- Where every total is a cell of the table (pub_indicator_values publishes every period
    -- type), adjacent types are enough: their chains imply the rest
    -- (int_period_type_covers). Where totals are printed elsewhere, a chain can pass through
    -- a total with a single part, which no masking in this table protects: all pairs there.
    where c.table_name <> 'pub_indicator_values' or cover.period_type is not null

),

combo_parts as (

    select
        'combo' as family, c.table_name, c.measure, c.key_1, c.key_2, '' as key_3, '' as key_4,
        c.org_unit_id as anchor_org_unit_id, c.period_id as anchor_period_id,
        '' as anchor_period_type, c.cell_id
    from cells as c
    where c.table_name = 'pub_data_values'

),

parts as (

    select * from org_parts
    union all
    select * from period_parts
    union all
    select * from combo_parts

),

groups as (

    select distinct
        family, table_name, measure, key_1, key_2, key_3, key_4,
        anchor_org_unit_id, anchor_period_id, anchor_period_type
    from parts
    where family in ('org', 'period')

),

totals as (

    -- ... and the parent's (or coarser period's) own cell, where the table has it, is the total
    select
        g.family, g.table_name, g.measure, g.key_1, g.key_2, g.key_3, g.key_4,
        g.anchor_org_unit_id, g.anchor_period_id, g.anchor_period_type, c.cell_id
    from groups as g
    join cells as c
        on c.table_name = g.table_name
        and c.measure = g.measure
        and c.key_1 = g.key_1
        and c.key_2 = g.key_2
        and c.key_3 = g.key_3
        and c.key_4 = g.key_4
        and c.org_unit_id = g.anchor_org_unit_id
        and c.period_id = g.anchor_period_id

),

members as (

    select * from parts
    union all
    select * from totals

)

select
    md5(concat_ws('|', family, table_name, measure, key_1, key_2, key_3, key_4,
                  anchor_org_unit_id, anchor_period_id, anchor_period_type)) as group_id,
    family,
    cell_id
from members
