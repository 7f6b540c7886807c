{#- int_suppression_cells in integers, for the joins of masking and its data test: the table as
    a number (hp_suppression_table_key), the org unit, parent, period and period type as
    numbered in int_suppression_keys, and the value (the candidate order). Left joins and
    not_null tests: a cell that lost its place would silently leave its groups, so a missing
    key fails the build instead. -#}
{{ config(
    materialized='table',
    indexes=hp_indexes([
        {'columns': ['cell_id'], 'unique': true},
        {'columns': ['series_id', 'parent_key', 'period_key']},
        {'columns': ['series_id', 'org_unit_key', 'period_key']},
        {'columns': ['combo_series_id', 'org_unit_key', 'period_key']},
    ])
) }}

with keys as (

    select key_kind, key_text, key_number from {{ ref('int_suppression_keys') }}

)

select
    c.cell_id,
    c.series_id,
    c.combo_series_id,
    {{ hp_suppression_table_key('c.table_name') }} as table_key,
    org_unit.key_number as org_unit_key,
    parent.key_number as parent_key,
    period.key_number as period_key,
    period_type.key_number as period_type_key,
    c.cell_value
from {{ ref('int_suppression_cells') }} as c
left join keys as org_unit
    on org_unit.key_kind = 'org_unit' and org_unit.key_text = c.org_unit_id
left join keys as parent
    on parent.key_kind = 'org_unit' and parent.key_text = c.parent_id
left join keys as period
    on period.key_kind = 'period' and period.key_text = c.period_id
left join keys as period_type
    on period_type.key_kind = 'period_type' and period_type.key_text = c.period_type
