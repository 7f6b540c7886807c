{#- CHW household visits (ODK form household_visit): validated, not deleted, the latest
    version of each submission. The form's second version renamed muac/muac to muac/muac_mm
    (schema drift): lowest_muac_mm reads either name. -#}
with source as (

    select
        *,
        row_number() over (
            partition by source_name, form_id, submission_id
            order by coalesce(updated_at, submission_date) desc, landed_at desc
        ) as recency_rank
    from {{ source('odk', 'submissions') }}
    where form_id = 'household_visit' and validation_status = 'valid' and not is_deleted

),

renamed as (

    select
        -- ids
        submission_id,
        instance_id,
        source_name,
        form_version,
        {{ hp_json_text('payload', ['chw_id']) }} as chw_id,
        {{ hp_json_text('payload', ['household', 'household_id']) }} as household_key,
        {{ hp_json_text('payload', ['referral', 'referral_id']) }} as referral_key,

        -- codes
        {{ hp_json_text('payload', ['facility_code']) }} as org_unit_code,
        {{ hp_json_text('payload', ['danger_signs']) }} as danger_signs,
        {{ hp_json_text('payload', ['muac', 'class']) }} as muac_class,
        {{ hp_json_text('payload', ['referral', 'reason']) }} as referral_reason,
        review_state,

        -- numerics
        cast({{ hp_try_cast_double(hp_json_text('payload', ['household', 'members'])) }} as integer) as household_members,
        cast({{ hp_try_cast_double(hp_json_text('payload', ['household', 'pregnant_women'])) }} as integer) as pregnant_women,
        cast({{ hp_try_cast_double(hp_json_text('payload', ['household', 'children_under5'])) }} as integer) as children_under5,
        cast({{ hp_try_cast_double(hp_json_text('payload', ['muac', 'eligible'])) }} as integer) as children_eligible_for_muac,
        cast({{ hp_try_cast_double(hp_json_text('payload', ['muac', 'screened'])) }} as integer) as children_screened_muac,
        cast({{ hp_try_cast_double(
            'coalesce(' ~ hp_json_text('payload', ['muac', 'muac_mm']) ~ ', '
            ~ hp_json_text('payload', ['muac', 'muac']) ~ ')'
        ) }} as integer) as lowest_muac_mm,
        cast({{ hp_try_cast_double('edits') }} as integer) as edit_count,

        -- booleans (the form's yes/no answers)
        {{ hp_json_text('payload', ['danger_signs']) }} is not null as has_danger_signs,
        case {{ hp_json_text('payload', ['referral', 'referred']) }}
            when 'yes' then true when 'no' then false end as is_referred,
        case {{ hp_json_text('payload', ['wash', 'safe_water']) }}
            when 'yes' then true when 'no' then false end as has_safe_water,
        case {{ hp_json_text('payload', ['wash', 'improved_latrine']) }}
            when 'yes' then true when 'no' then false end as has_improved_latrine,

        -- dates and timestamps (UTC; visit_date is the CHW's local date)
        cast({{ hp_try_cast_timestamp(hp_json_text('payload', ['visit_date'])) }} as date) as visit_date,
        {{ hp_try_cast_timestamp('submission_date') }} as submitted_at,
        {{ hp_try_cast_timestamp('updated_at') }} as source_updated_at,
        landed_at

    from source
    where recency_rank = 1

)

select * from renamed
