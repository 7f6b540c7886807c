{#- int_suppression_period_links in integers (int_suppression_keys), for the joins of masking
    and its data test. -#}
{{ config(materialized='table') }}

with keys as (

    select key_kind, key_text, key_number from {{ ref('int_suppression_keys') }}

)

select
    {{ hp_suppression_table_key('l.table_name') }} as table_key,
    period.key_number as period_key,
    period_type.key_number as period_type_key,
    target_period.key_number as target_period_key
from {{ ref('int_suppression_period_links') }} as l
left join keys as period
    on period.key_kind = 'period' and period.key_text = l.period_id
left join keys as period_type
    on period_type.key_kind = 'period_type' and period_type.key_text = l.period_type
left join keys as target_period
    on target_period.key_kind = 'period' and target_period.key_text = l.target_period_id
