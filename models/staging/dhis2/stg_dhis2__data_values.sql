with source as (

    select * from {{ source('dhis2', 'data_values') }}
    where validation_status = 'valid' and not is_deleted

),

renamed as (

    select
        -- ids
        data_element as data_element_id,
        category_option_combo as category_option_combo_id,
        attribute_option_combo as attribute_option_combo_id,
        org_unit as org_unit_id,
        period as period_id,
        data_set as data_set_id,
        source_name,
        batch_id,

        -- values
        {{ hp_try_cast_double('value') }} as value_numeric,
        value as value_text,
        comment,
        stored_by,
        coalesce(followup, false) as is_followup,

        -- timestamps
        {{ hp_try_cast_timestamp('created') }} as source_created_at,
        {{ hp_try_cast_timestamp('last_updated') }} as source_updated_at,
        landed_at

    from source

)

select * from renamed
