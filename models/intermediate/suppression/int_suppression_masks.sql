{#- Every public cell with whether it is masked: masked_round is 0 for a primary cell (a small
    count) and n for a cell masked in round n (int_suppression_masked_cells), so a reviewer
    can see why a large count is hidden. At the end no published total minus published parts,
    along org units, periods or disaggregations, gives a masked cell away; the data test
    assert_suppressed_cells_are_not_recoverable checks it on every build. -#}
{{ config(
    materialized='table',
    indexes=hp_indexes([{'columns': ['cell_id'], 'unique': true}]),
) }}

select
    c.cell_id,
    c.cell_value,
    m.cell_id is not null as is_masked,
    m.masked_round
from {{ ref('int_suppression_cells') }} as c
left join {{ ref('int_suppression_masked_cells') }} as m on m.cell_id = c.cell_id
