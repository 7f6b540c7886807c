with source as (

    select * from {{ source('fhir', 'encounter') }}
    where validation_status = 'valid'

),

latest as (

    -- one row per encounter: the latest valid version (a Bulk Data deletion is a version too)
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
        resource_id as encounter_id,
        version_id,
        source_name,
        case when subject_reference like 'Patient/%'
             then substr(subject_reference, 9) end as patient_id,
        case when location_reference like 'Location/%'
             then substr(location_reference, 10) end as location_id,
        case when service_provider_reference like 'Organization/%'
             then substr(service_provider_reference, 14) end as organization_id,

        -- codes
        status,
        class_code,
        type_code,
        type_text,

        -- timestamps (UTC) and the clinic's local day
        {{ hp_try_cast_timestamp('period_start_at') }} as started_at,
        {{ hp_try_cast_timestamp('period_end_at') }} as ended_at,
        cast({{ hp_try_cast_timestamp('period_start_date') }} as date) as start_date,
        {{ hp_try_cast_timestamp('last_updated') }} as source_updated_at,
        landed_at

    from latest
    where version_rank = 1 and not is_deleted

)

select * from renamed
