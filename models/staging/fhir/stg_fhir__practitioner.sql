with source as (

    select * from {{ source('fhir', 'practitioner') }}
    where validation_status = 'valid'

),

latest as (

    -- one row per practitioner: the latest valid version (a Bulk Data deletion is a version too)
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
        resource_id as practitioner_id,
        version_id,
        source_name,
        identifier_system,
        identifier_value as staff_identifier,  -- a pseudonym of the staff number

        -- descriptors (no names, contacts or exact birth dates are landed)
        gender,
        cast({{ hp_try_cast_double('birth_year') }} as integer) as birth_year,
        qualification_codes,
        active = 'true' as is_active,

        -- timestamps
        {{ hp_try_cast_timestamp('last_updated') }} as source_updated_at,
        landed_at

    from latest
    where version_rank = 1 and not is_deleted

)

select * from renamed
