with source as (

    select * from {{ source('fhir', 'medication_dispense') }}
    where validation_status = 'valid'

),

latest as (

    -- one row per dispense: the latest valid version (a Bulk Data deletion is a version too)
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
        resource_id as medication_dispense_id,
        version_id,
        source_name,
        case when subject_reference like 'Patient/%'
             then substr(subject_reference, 9) end as patient_id,
        case when encounter_reference like 'Encounter/%'
             then substr(encounter_reference, 11) end as encounter_id,
        case when location_reference like 'Location/%'
             then substr(location_reference, 10) end as location_id,
        case when medication_reference like 'Medication/%'
             then substr(medication_reference, 12) end as medication_id,

        -- codes (WHO ATC where medication_system says so)
        status,
        medication_system,
        medication_code,
        medication_display,
        medication_text,

        -- quantities
        {{ hp_try_cast_double('quantity_value') }} as quantity,
        quantity_unit,
        {{ hp_try_cast_double('days_supply') }} as days_supply,

        -- timestamps (UTC) and the clinic's local day
        {{ hp_try_cast_timestamp('prepared_at') }} as prepared_at,
        {{ hp_try_cast_timestamp('handed_over_at') }} as handed_over_at,
        cast({{ hp_try_cast_timestamp('handed_over_date') }} as date) as handed_over_date,
        {{ hp_try_cast_timestamp('last_updated') }} as source_updated_at,
        landed_at

    from latest
    where version_rank = 1 and not is_deleted

)

select * from renamed
