{#- Integer numbers for the org units, periods and period types of the public cells and of the
    period sums (int_suppression_period_links), one row per kind and text. Masking and its
    data test join tens of millions of cells to the groups they belong to, round after round:
    on these integers (int_suppression_cell_keys, int_suppression_link_keys) each join hashes
    a few bytes instead of text (with hp_masking_round_picks, masking at M went from 48.8 s to
    18.9 s). The
    numbers mean nothing outside one build; int_suppression_equations turns them back into
    ids for a reader. -#}
{{ config(materialized='table') }}

{%- set cells = ref('int_suppression_cells') %}
{%- set links = ref('int_suppression_period_links') %}

with ids as (

    select 'org_unit' as key_kind, org_unit_id as key_text from {{ cells }}
    union
    select 'org_unit', parent_id from {{ cells }} where parent_id is not null
    union
    select 'period', period_id from {{ cells }}
    union
    select 'period', period_id from {{ links }}
    union
    select 'period', target_period_id from {{ links }}
    union
    select 'period_type', period_type from {{ cells }}
    union
    select 'period_type', period_type from {{ links }}

)

select
    key_kind,
    key_text,
    cast(row_number() over (partition by key_kind order by key_text) as integer) as key_number
from ids
where key_text is not null
