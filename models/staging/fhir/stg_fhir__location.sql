with source as (

    select * from {{ source('fhir', 'location') }}
    where validation_status = 'valid'

),

latest as (

    -- one row per location: the latest valid version (a Bulk Data deletion is a version too)
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
        -- ids (org_unit_id: the DHIS2 UID from the location's identifier)
        resource_id as location_id,
        version_id,
        source_name,
        org_unit_uid as org_unit_id,
        org_unit_code,
        case when managing_organization_reference like 'Organization/%'
             then substr(managing_organization_reference, 14) end as organization_id,
        case when part_of_reference like 'Location/%'
             then substr(part_of_reference, 10) end as parent_location_id,

        -- descriptors
        status,
        name,
        type_code,
        type_text,
        physical_type_code,
        {{ hp_try_cast_double('latitude') }} as latitude,
        {{ hp_try_cast_double('longitude') }} as longitude,

        -- timestamps
        {{ hp_try_cast_timestamp('last_updated') }} as source_updated_at,
        landed_at

    from latest
    where version_rank = 1 and not is_deleted

)

select * from renamed
