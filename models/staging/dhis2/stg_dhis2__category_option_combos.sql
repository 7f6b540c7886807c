with source as (

    select * from {{ source('dhis2', 'category_option_combos') }}
    where validation_status = 'valid' and not is_deleted

),

renamed as (

    select
        -- ids
        id as category_option_combo_id,
        category_combo_id,
        source_name,

        -- descriptors
        code,
        name,

        -- dates
        {{ hp_try_cast_timestamp('last_updated') }} as source_updated_at,
        landed_at

    from source

)

select * from renamed
