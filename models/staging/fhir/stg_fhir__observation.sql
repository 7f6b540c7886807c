with source as (

    select * from {{ source('fhir', 'observation') }}
    where validation_status = 'valid'

),

latest as (

    -- one row per observation: the latest valid version (a corrected result replaces the
    -- original; a Bulk Data deletion is a version too)
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
        resource_id as observation_id,
        version_id,
        source_name,
        case when subject_reference like 'Patient/%'
             then substr(subject_reference, 9) end as patient_id,
        case when encounter_reference like 'Encounter/%'
             then substr(encounter_reference, 11) end as encounter_id,

        -- codes
        status,
        category_code,
        code_system,
        code,
        code_display,
        code_text,
        interpretation_code,

        -- values (components: a JSON list of {system, code, value, unit} for panels)
        {{ hp_try_cast_double('value_quantity') }} as value_numeric,
        value_unit,
        value_comparator,
        value_code,
        value_text,
        components,

        -- timestamps (UTC) and the clinic's local day
        {{ hp_try_cast_timestamp('effective_at') }} as effective_at,
        cast({{ hp_try_cast_timestamp('effective_date') }} as date) as effective_date,
        {{ hp_try_cast_timestamp('issued_at') }} as issued_at,
        {{ hp_try_cast_timestamp('last_updated') }} as source_updated_at,
        landed_at

    from latest
    where version_rank = 1 and not is_deleted

)

select * from renamed
