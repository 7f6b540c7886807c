{#- The period sums each public table lays open: (finer period, coarser period it rolls into)
    per table. In pub_indicator_values, where every period total is a cell, only adjacent
    period types (int_period_type_covers: the sums of a chain of adjacent types protect the
    sum that skips them); elsewhere every pair, since there a chain can pass through a total
    printed by another table with a single part, which no masking in this table protects. -#}
{{ config(materialized='table') }}

with public_tables as (

    select 'pub_surveillance_weekly' as table_name
    union all
    select 'pub_indicator_values'
    union all
    select 'pub_data_values'

)

select
    t.table_name,
    r.period_id,
    r.period_type,
    r.target_period_id,
    r.target_period_type
from {{ ref('int_period_rollups') }} as r
cross join public_tables as t
left join {{ ref('int_period_type_covers') }} as cover
    on cover.period_type = r.period_type
    and cover.target_period_type = r.target_period_type
where r.target_period_id <> r.period_id
  and (t.table_name <> 'pub_indicator_values' or cover.period_type is not null)
