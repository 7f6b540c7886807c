{#- One row per data element UID (the most recently updated version when several DHIS2
    sources publish it). Derived data elements join here later. -#}
with ranked as (

    select
        *,
        row_number() over (
            partition by data_element_id
            order by source_updated_at desc nulls last, landed_at desc, source_name
        ) as recency
    from {{ ref('stg_dhis2__data_elements') }}

)

select
    data_element_id,
    code,
    name,
    short_name,
    value_type,
    aggregation_type,
    domain_type,
    category_combo_id,
    source_name
from ranked
where recency = 1
