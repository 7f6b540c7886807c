{#- MUAC and WASH screenings of children 6-59 months (Kobo asset nutrition_muac_wash_screening):
    validated, not deleted, one row per instance (a result the tablet sent twice is kept once:
    the later copy is quarantined as a duplicate, and the latest row wins here if both pass).
    child/oedema exists from the asset's second version on (schema drift): null before. -#}
with source as (

    select
        *,
        row_number() over (
            partition by source_name, asset_uid, coalesce(instance_id, uuid, submission_id)
            order by submission_time desc, length(submission_id) desc, submission_id desc
        ) as recency_rank
    from {{ source('kobo', 'submissions') }}
    where asset_name = 'nutrition_muac_wash_screening'
        and validation_status = 'valid'
        and not is_deleted

),

renamed as (

    select
        -- ids
        submission_id,
        instance_id,
        source_name,
        asset_uid,
        form_version,

        -- codes
        {{ hp_json_text('payload', ['site', 'facility_code']) }} as org_unit_code,
        {{ hp_json_text('payload', ['site', 'district_code']) }} as district_code,
        {{ hp_json_text('payload', ['child', 'sex']) }} as child_sex,
        {{ hp_json_text('payload', ['child', 'muac_status']) }} as muac_status,
        {{ hp_json_text('payload', ['wash', 'water_source']) }} as water_source,
        {{ hp_json_text('payload', ['wash', 'sanitation']) }} as sanitation,
        review_state,

        -- numerics
        cast({{ hp_try_cast_double(hp_json_text('payload', ['child', 'age_months'])) }} as integer) as child_age_months,
        cast({{ hp_try_cast_double(hp_json_text('payload', ['child', 'muac_mm'])) }} as integer) as muac_mm,

        -- booleans
        case {{ hp_json_text('payload', ['child', 'referred']) }}
            when 'yes' then true when 'no' then false end as is_referred,
        case {{ hp_json_text('payload', ['child', 'oedema']) }}
            when 'yes' then true when 'no' then false end as has_oedema,
        -- improved sources and facilities as the WHO/UNICEF JMP classifies them
        {{ hp_json_text('payload', ['wash', 'water_source']) }}
            in ('piped', 'borehole', 'protected_well', 'protected_spring', 'rainwater')
            as has_improved_water_source,
        {{ hp_json_text('payload', ['wash', 'sanitation']) }}
            in ('flush', 'pit_slab', 'vip', 'composting') as has_improved_sanitation,

        -- dates and timestamps (submitted_at in UTC; screening_date is the local date)
        cast({{ hp_try_cast_timestamp(hp_json_text('payload', ['today'])) }} as date) as screening_date,
        {{ hp_try_cast_timestamp('submission_time') }} as submitted_at,
        landed_at

    from source
    where recency_rank = 1

)

select * from renamed
