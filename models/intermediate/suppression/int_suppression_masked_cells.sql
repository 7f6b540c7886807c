{#- The masked public cells: the primary cells (small counts) as round 0, then, round by round,
    the complementary cells that keep every equation of int_suppression_equations from having
    exactly one masked cell (macros/small_cell_suppression.sql, hp_complete_masking, which
    appends each round's cells here). int_suppression_masks joins them back to every cell. -#}
{{ config(
    materialized='table',
    indexes=hp_indexes([{'columns': ['cell_id'], 'unique': true}]),
    post_hook=[
        "{{ hp_analyze(this) }}",
        "{{ hp_complete_masking(this, ref('int_suppression_cell_keys'), ref('int_suppression_link_keys')) }}",
    ]
) }}

-- depends_on: {{ ref('int_suppression_cell_keys') }}
-- depends_on: {{ ref('int_suppression_link_keys') }}
-- The view of every equation is not read here; after it, so that replacing an older
-- version's equation table never runs beside this model (DuckDB's catalog then conflicts).
-- depends_on: {{ ref('int_suppression_equations') }}

select
    cell_id,
    0 as masked_round
from {{ ref('int_suppression_cells') }}
where is_primary
