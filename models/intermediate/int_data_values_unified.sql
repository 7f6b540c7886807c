{#- Every data value the indicators read, with its period's type and dates: DHIS2 values as
    they come (derived data elements from record-level sources are added here later). -#}
select
    v.data_element_id,
    v.category_option_combo_id,
    v.attribute_option_combo_id,
    v.org_unit_id,
    v.period_id,
    p.period_type,
    p.start_date as period_start_date,
    p.end_date as period_end_date,
    v.value_numeric as value,
    v.value_text,
    v.source_name as source,
    v.data_set_id,
    v.is_followup,
    v.source_updated_at,
    v.landed_at
from {{ ref('stg_dhis2__data_values') }} as v
join {{ ref('int_periods') }} as p on p.period_id = v.period_id
