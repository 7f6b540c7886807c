{#- One row per data set UID (the most recently updated version when several DHIS2 sources
    publish it). -#}
with ranked as (

    select
        *,
        row_number() over (
            partition by data_set_id
            order by source_updated_at desc nulls last, landed_at desc, source_name
        ) as recency
    from {{ ref('stg_dhis2__data_sets') }}

)

select
    data_set_id,
    code,
    name,
    period_type,
    coalesce(timely_days, 15) as timely_days,
    data_element_ids,
    org_unit_ids,
    source_name
from ranked
where recency = 1
