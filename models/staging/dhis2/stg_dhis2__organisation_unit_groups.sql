with source as (

    select * from {{ source('dhis2', 'organisation_unit_groups') }}
    where validation_status = 'valid' and not is_deleted

),

renamed as (

    select
        -- ids
        id as org_unit_group_id,
        source_name,

        -- descriptors
        code,
        name,
        short_name,

        -- members (JSON lists of UIDs)
        group_set_ids,
        org_unit_ids,

        -- dates
        {{ hp_try_cast_timestamp('last_updated') }} as source_updated_at,
        landed_at

    from source

)

select * from renamed
