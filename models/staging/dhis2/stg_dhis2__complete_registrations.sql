with source as (

    select * from {{ source('dhis2', 'complete_registrations') }}
    where validation_status = 'valid' and not is_deleted

),

renamed as (

    select
        -- ids
        data_set as data_set_id,
        period as period_id,
        org_unit as org_unit_id,
        attribute_option_combo as attribute_option_combo_id,
        source_name,

        -- flags
        coalesce(lower(completed), 'true') = 'true' as is_completed,
        stored_by,

        -- timestamps
        {{ hp_try_cast_timestamp('date') }} as completed_at,
        landed_at

    from source

)

select * from renamed
