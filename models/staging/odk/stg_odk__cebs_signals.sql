{#- Community event-based surveillance signals (ODK form cebs_signal): validated, not
    deleted, the latest version of each submission (a supervisor edits a signal to record its
    verification and escalation, so the latest version holds them). -#}
with source as (

    select
        *,
        row_number() over (
            partition by source_name, form_id, submission_id
            order by coalesce(updated_at, submission_date) desc, landed_at desc
        ) as recency_rank
    from {{ source('odk', 'submissions') }}
    where form_id = 'cebs_signal' and validation_status = 'valid' and not is_deleted

),

renamed as (

    select
        -- ids
        submission_id,
        instance_id,
        source_name,
        form_version,
        {{ hp_json_text('payload', ['chw_id']) }} as chw_id,

        -- codes
        {{ hp_json_text('payload', ['facility_code']) }} as org_unit_code,
        {{ hp_json_text('payload', ['signal_type']) }} as signal_type,
        {{ hp_json_text('payload', ['photo']) }} as photo_file_name,
        review_state,

        -- numerics
        cast({{ hp_try_cast_double(hp_json_text('payload', ['affected'])) }} as integer) as affected_count,

        -- booleans
        case {{ hp_json_text('payload', ['verification', 'verified']) }}
            when 'yes' then true when 'no' then false end as is_verified,
        case {{ hp_json_text('payload', ['verification', 'is_event']) }}
            when 'yes' then true when 'no' then false end as is_event,
        case {{ hp_json_text('payload', ['escalation', 'escalated']) }}
            when 'yes' then true when 'no' then false end as is_escalated,

        -- timestamps (UTC)
        {{ hp_try_cast_timestamp(hp_json_text('payload', ['reported_at'])) }} as reported_at,
        {{ hp_try_cast_timestamp(hp_json_text('payload', ['verification', 'verified_at'])) }} as verified_at,
        {{ hp_try_cast_timestamp(hp_json_text('payload', ['escalation', 'escalated_at'])) }} as escalated_at,
        {{ hp_try_cast_timestamp('submission_date') }} as submitted_at,
        {{ hp_try_cast_timestamp('updated_at') }} as source_updated_at,
        landed_at

    from source
    where recency_rank = 1

)

select * from renamed
