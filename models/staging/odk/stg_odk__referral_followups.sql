{#- CHW referral follow-ups (ODK form referral_followup): validated, not deleted, the latest
    version of each submission. referral_key is the same pseudonym as in
    stg_odk__household_visits, so follow-ups join the visits that made the referral. -#}
with source as (

    select
        *,
        row_number() over (
            partition by source_name, form_id, submission_id
            order by coalesce(updated_at, submission_date) desc, landed_at desc
        ) as recency_rank
    from {{ source('odk', 'submissions') }}
    where form_id = 'referral_followup' and validation_status = 'valid' and not is_deleted

),

renamed as (

    select
        -- ids
        submission_id,
        instance_id,
        source_name,
        form_version,
        {{ hp_json_text('payload', ['referral_id']) }} as referral_key,
        {{ hp_json_text('payload', ['chw_id']) }} as chw_id,

        -- codes
        {{ hp_json_text('payload', ['facility_code']) }} as org_unit_code,
        {{ hp_json_text('payload', ['reason_not_completed']) }} as reason_not_completed,
        review_state,

        -- booleans
        case {{ hp_json_text('payload', ['completed']) }}
            when 'yes' then true when 'no' then false end as is_completed,

        -- dates and timestamps (UTC; the form's dates are local)
        cast({{ hp_try_cast_timestamp(hp_json_text('payload', ['followup_date'])) }} as date) as followup_date,
        cast({{ hp_try_cast_timestamp(hp_json_text('payload', ['completion_date'])) }} as date) as completion_date,
        {{ hp_try_cast_timestamp('submission_date') }} as submitted_at,
        {{ hp_try_cast_timestamp('updated_at') }} as source_updated_at,
        landed_at

    from source
    where recency_rank = 1

)

select * from renamed
