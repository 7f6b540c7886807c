{#- One row per org unit UID. When several DHIS2 sources publish the same unit, the most
    recently updated version wins. -#}
with ranked as (

    select
        *,
        row_number() over (
            partition by org_unit_id
            order by source_updated_at desc nulls last, landed_at desc, source_name
        ) as recency
    from {{ ref('stg_dhis2__organisation_units') }}

)

select
    org_unit_id,
    code,
    name,
    short_name,
    level,
    parent_id,
    path,
    geometry,
    group_ids,
    opened_at,
    closed_at,
    source_name
from ranked
where recency = 1
