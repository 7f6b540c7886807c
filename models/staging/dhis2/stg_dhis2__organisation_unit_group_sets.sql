with source as (

    select * from {{ source('dhis2', 'organisation_unit_group_sets') }}
    where validation_status = 'valid' and not is_deleted

),

renamed as (

    select
        -- ids
        id as org_unit_group_set_id,
        source_name,

        -- descriptors
        code,
        name,

        -- members (JSON list of group UIDs)
        group_ids,

        -- dates
        {{ hp_try_cast_timestamp('last_updated') }} as source_updated_at,
        landed_at

    from source

)

select * from renamed
