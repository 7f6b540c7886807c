with source as (

    select * from {{ source('fhir', 'practitioner_role') }}
    where validation_status = 'valid'

),

latest as (

    -- one row per role: the latest valid version (a worker who left has a later version
    -- with active false and an end date; a Bulk Data deletion is a version too)
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
        -- ids
        resource_id as practitioner_role_id,
        version_id,
        source_name,
        case when practitioner_reference like 'Practitioner/%'
             then substr(practitioner_reference, 14) end as practitioner_id,
        case when organization_reference like 'Organization/%'
             then substr(organization_reference, 14) end as organization_id,
        case when location_reference like 'Location/%'
             then substr(location_reference, 10) end as location_id,

        -- codes (ISCO-08 unit groups where role_system says so)
        role_system,
        role_code,
        role_display,
        role_text,
        active = 'true' as is_active,

        -- dates
        cast({{ hp_try_cast_timestamp('period_start') }} as date) as start_date,
        cast({{ hp_try_cast_timestamp('period_end') }} as date) as end_date,
        {{ hp_try_cast_timestamp('last_updated') }} as source_updated_at,
        landed_at

    from latest
    where version_rank = 1 and not is_deleted

)

select * from renamed
