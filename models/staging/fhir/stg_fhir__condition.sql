with source as (

    select * from {{ source('fhir', 'condition') }}
    where validation_status = 'valid'

),

latest as (

    -- one row per condition: the latest valid version (an acute diagnosis is resolved by a
    -- later version; a Bulk Data deletion is a version too)
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
        resource_id as condition_id,
        version_id,
        source_name,
        case when subject_reference like 'Patient/%'
             then substr(subject_reference, 9) end as patient_id,
        case when encounter_reference like 'Encounter/%'
             then substr(encounter_reference, 11) end as encounter_id,

        -- codes (WHO ICD-10 where code_system says so)
        clinical_status,
        verification_status,
        category_code,
        code_system,
        code,
        code_display,
        code_text,

        -- timestamps (UTC; onset and abatement are often dates only) and the local day
        {{ hp_try_cast_timestamp('onset_at') }} as onset_at,
        {{ hp_try_cast_timestamp('abatement_at') }} as abated_at,
        {{ hp_try_cast_timestamp('recorded_at') }} as recorded_at,
        cast({{ hp_try_cast_timestamp('recorded_date') }} as date) as recorded_date,
        {{ hp_try_cast_timestamp('last_updated') }} as source_updated_at,
        landed_at

    from latest
    where version_rank = 1 and not is_deleted

)

select * from renamed
