with source as (

    select * from {{ source('dhis2', 'data_sets') }}
    where validation_status = 'valid' and not is_deleted

),

renamed as (

    select
        -- ids
        id as data_set_id,
        source_name,

        -- descriptors
        code,
        name,
        short_name,
        period_type,

        -- numerics
        cast({{ hp_try_cast_double('timely_days') }} as integer) as timely_days,
        cast({{ hp_try_cast_double('expiry_days') }} as integer) as expiry_days,

        -- members (JSON lists of UIDs)
        data_element_ids,
        org_unit_ids,

        -- dates
        {{ hp_try_cast_timestamp('last_updated') }} as source_updated_at,
        landed_at

    from source

)

select * from renamed
