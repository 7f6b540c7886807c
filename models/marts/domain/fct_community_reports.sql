{#- Community health worker reports (ODK), one row per submission: household visits,
    referral follow-ups and community event-based surveillance (CEBS) signals, with the org
    unit of the CHW's link facility and the report's local date. -#}
with org_units as (

    select org_unit_id, code from {{ ref('int_org_units') }}

),

visits as (

    select
        'household_visit' as report_type,
        source_name,
        submission_id,
        org_unit_code,
        chw_id,
        visit_date as report_date,
        household_key,
        referral_key,
        is_referred,
        cast(null as boolean) as is_completed,
        has_safe_water,
        has_improved_latrine,
        children_eligible_for_muac,
        children_screened_muac,
        muac_class,
        has_danger_signs,
        cast(null as boolean) as is_verified,
        cast(null as {{ hp_type_double() }}) as hours_to_verification
    from {{ ref('stg_odk__household_visits') }}

),

followups as (

    select
        'referral_followup' as report_type,
        source_name,
        submission_id,
        org_unit_code,
        chw_id,
        followup_date as report_date,
        cast(null as {{ hp_type_text() }}) as household_key,
        referral_key,
        cast(null as boolean) as is_referred,
        is_completed,
        cast(null as boolean) as has_safe_water,
        cast(null as boolean) as has_improved_latrine,
        cast(null as integer) as children_eligible_for_muac,
        cast(null as integer) as children_screened_muac,
        cast(null as {{ hp_type_text() }}) as muac_class,
        cast(null as boolean) as has_danger_signs,
        cast(null as boolean) as is_verified,
        cast(null as {{ hp_type_double() }}) as hours_to_verification
    from {{ ref('stg_odk__referral_followups') }}

),

signals as (

    select
        'cebs_signal' as report_type,
        source_name,
        submission_id,
        org_unit_code,
        chw_id,
        cast(reported_at as date) as report_date,
        cast(null as {{ hp_type_text() }}) as household_key,
        cast(null as {{ hp_type_text() }}) as referral_key,
        cast(null as boolean) as is_referred,
        cast(null as boolean) as is_completed,
        cast(null as boolean) as has_safe_water,
        cast(null as boolean) as has_improved_latrine,
        cast(null as integer) as children_eligible_for_muac,
        cast(null as integer) as children_screened_muac,
        cast(null as {{ hp_type_text() }}) as muac_class,
        cast(null as boolean) as has_danger_signs,
        is_verified,
        {{ hp_hours_between('reported_at', 'verified_at') }} as hours_to_verification
    from {{ ref('stg_odk__cebs_signals') }}

),

reports as (

    select * from visits
    union all
    select * from followups
    union all
    select * from signals

)

select
    r.report_type || ':' || r.source_name || ':' || r.submission_id as community_report_key,
    r.report_type,
    r.source_name,
    o.org_unit_id,
    r.chw_id,
    r.report_date,
    r.household_key,
    r.referral_key,
    r.is_referred,
    r.is_completed,
    r.has_safe_water,
    r.has_improved_latrine,
    r.children_eligible_for_muac,
    r.children_screened_muac,
    r.muac_class,
    r.has_danger_signs,
    r.is_verified,
    r.hours_to_verification
from reports as r
join org_units as o on o.code = r.org_unit_code
