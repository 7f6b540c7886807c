{#- One row per org-unit group set UID with a column name for dim_org_unit: the set's code
    (or name) in snake_case, e.g. FACILITY_TYPE -> facility_type. -#}
with ranked as (

    select
        *,
        row_number() over (
            partition by org_unit_group_set_id
            order by source_updated_at desc nulls last, landed_at desc, source_name
        ) as recency
    from {{ ref('stg_dhis2__organisation_unit_group_sets') }}

)

select
    org_unit_group_set_id,
    code,
    name,
    group_ids,
    trim(both '_' from {{ hp_regexp_replace_all("lower(coalesce(code, name))", "'[^a-z0-9]+'", "'_'") }})
        as column_name
from ranked
where recency = 1
