with source as (

    select * from {{ source('fhir', 'patient') }}
    where validation_status = 'valid'

),

latest as (

    -- one row per patient: the latest valid version (a Bulk Data deletion is a version too)
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
        -- ids (pseudonyms: keyed HMAC of the source's patient id and identifier)
        resource_id as patient_id,
        version_id,
        source_name,
        identifier_system,
        identifier_value as patient_identifier,
        case when managing_organization_reference like 'Organization/%'
             then substr(managing_organization_reference, 14) end as managing_organization_id,

        -- demographics (no names, contacts, addresses or exact birth dates are landed)
        gender,
        cast({{ hp_try_cast_double('birth_year') }} as integer) as birth_year,
        age_band,
        cast({{ hp_try_cast_double('deceased_year') }} as integer) as deceased_year,
        active = 'true' as is_active,
        coalesce(deceased = 'true', false) as is_deceased,

        -- timestamps
        {{ hp_try_cast_timestamp('last_updated') }} as source_updated_at,
        landed_at

    from latest
    where version_rank = 1 and not is_deleted

)

select * from renamed
