{#- Which public cells are masked: the primary cells (small counts), then, round by round, the
    complementary cells that keep every equation of int_suppression_equations from having
    exactly one masked cell (macros/small_cell_suppression.sql, hp_complete_masking). At the
    end no published total minus published parts, along org units, periods or
    disaggregations, gives a masked cell away; the data test
    assert_suppressed_cells_are_not_recoverable checks it on every build.

    masked_round is 0 for a primary cell and n for a cell masked in round n, so a reviewer can
    see why a large count is hidden. -#}
{{ config(
    materialized='table',
    indexes=hp_indexes([{'columns': ['cell_id'], 'unique': true}]),
    post_hook=[
        "{{ hp_analyze(this) }}",
        "{{ hp_complete_masking(this, ref('int_suppression_cells'), ref('int_suppression_period_links')) }}",
    ]
) }}

-- depends_on: {{ ref('int_suppression_period_links') }}
-- The view of every equation is not read here; after it, so that replacing an older
-- version's equation table never runs beside this model (DuckDB's catalog then conflicts).
-- depends_on: {{ ref('int_suppression_equations') }}

select
    cell_id,
    cell_value,
    is_primary as is_masked,
    case when is_primary then 0 end as masked_round
from {{ ref('int_suppression_cells') }}
