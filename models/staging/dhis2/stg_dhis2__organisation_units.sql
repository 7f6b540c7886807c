with source as (

    select * from {{ source('dhis2', 'organisation_units') }}
    where validation_status = 'valid' and not is_deleted

),

renamed as (

    select
        -- ids
        id as org_unit_id,
        parent_id,
        source_name,

        -- descriptors
        code,
        name,
        short_name,
        path,
        -- the path is authoritative; DHIS2's `level` field is optional in many exports
        length(path) - length(replace(path, '/', '')) as level,
        geometry,
        group_ids,

        -- dates
        {{ hp_try_cast_timestamp('opening_date') }} as opened_at,
        {{ hp_try_cast_timestamp('closed_date') }} as closed_at,
        {{ hp_try_cast_timestamp('last_updated') }} as source_updated_at,
        landed_at

    from source

)

select * from renamed
