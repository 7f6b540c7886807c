with source as (

    select * from {{ source('fhir', 'organization') }}
    where validation_status = 'valid'

),

latest as (

    -- one row per organization: the latest valid version (a Bulk Data deletion is a version too)
    select
        *,
        row_number() over (
            partition by source_name, resource_id
            order by
                {{ hp_try_cast_timestamp('last_updated') }} desc nulls last,
                {{ hp_try_cast_double('version_id') }} desc nulls last,
                version_id desc
        ) as version_rank
    from source

),

renamed as (

    select
        -- ids (org_unit_id: the DHIS2 UID from the organization's identifier)
        resource_id as organization_id,
        version_id,
        source_name,
        org_unit_uid as org_unit_id,
        org_unit_code,
        case when part_of_reference like 'Organization/%'
             then substr(part_of_reference, 14) end as parent_organization_id,

        -- descriptors
        name,
        type_code,
        active = 'true' as is_active,

        -- timestamps
        {{ hp_try_cast_timestamp('last_updated') }} as source_updated_at,
        landed_at

    from latest
    where version_rank = 1 and not is_deleted

)

select * from renamed
