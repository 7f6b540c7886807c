{#- Laboratory results, one row per source, order and test with its latest status: a corrected
    result (a later message for the same order and test, OBX-11 C) replaces the original, whose
    history stays in raw. A corrected report (OBR-25 C) also withdraws the earlier results of its
    order that it no longer carries (a rifampicin result after the MTB result was corrected to
    not detected). Orders reported without observations (rejected specimens) are kept as rows
    with no value, so rejection rates can be computed. -#}

with source as (

    select * from {{ source('hl7v2', 'results') }}
    where validation_status = 'valid' and not is_deleted

),

renamed as (

    select
        -- ids
        source_name,
        message_control_id,
        cast(segment_position as integer) as segment_position,
        cast(obx_index as integer) as observation_index,
        obx_set_id as observation_set_id,
        case
            when filler_order_number is not null
                then 'filler:' || coalesce(filler_order_namespace, '') || '^' || filler_order_number
            when placer_order_number is not null
                then 'placer:' || coalesce(placer_order_namespace, '') || '^' || placer_order_number
            else 'message:' || message_control_id
        end as order_key,
        filler_order_number,
        filler_order_namespace,
        placer_order_number,
        placer_order_namespace,
        patient_key,
        ordering_facility_code as org_unit_code,
        ordering_facility_name as org_unit_name,
        performing_lab_code,
        sending_facility_id as sending_lab_code,
        sending_facility as sending_lab_name,

        -- codes
        coalesce(test_code, order_test_code) as test_code,
        coalesce(test_name, order_test_name) as test_name,
        coalesce(test_system, order_test_system) as test_system,
        order_test_code,
        value_type,
        specimen_type_code,
        specimen_type_name,
        specimen_reject_reason_code,
        specimen_reject_reason,
        result_status,
        order_status,
        abnormal_flags as interpretation,
        patient_sex,
        patient_age_band,
        cast(patient_birth_year as integer) as patient_birth_year,

        -- values
        value as value_text,
        case
            when value_type in ('CWE', 'CE', 'CNE', 'CF') then nullif(split_part(value, '^', 1), '')
        end as value_code,
        case
            when value_type = 'NM' then {{ hp_try_cast_double('value') }}
            when value_type = 'SN' then {{ hp_try_cast_double("split_part(value, '^', 2)") }}
        end as value_numeric,
        case when value_type = 'SN' then nullif(split_part(value, '^', 1), '') end as value_comparator,
        units,
        reference_range,
        coalesce(order_status = 'X' or specimen_reject_reason_code is not null, false)
            as is_specimen_rejected,
        coalesce(result_status = 'C', false) as is_corrected,

        -- timestamps (UTC)
        {{ hp_hl7_timestamp('message_sent_at') }} as message_sent_at,
        {{ hp_hl7_timestamp('coalesce(collected_at, specimen_collected_at, observed_at)') }}
            as collected_at,
        {{ hp_hl7_timestamp('specimen_received_at') }} as received_at,
        {{ hp_hl7_timestamp('coalesce(analysed_at, results_reported_at)') }} as resulted_at,
        {{ hp_hl7_timestamp('results_reported_at') }} as reported_at,
        landed_at

    from source

),

ranked as (

    select
        *,
        row_number() over (
            partition by source_name, order_key, test_code
            order by
                message_sent_at desc nulls last,
                case result_status when 'C' then 0 when 'F' then 1 when 'P' then 2 else 3 end,
                landed_at desc,
                message_control_id desc
        ) as recency_rank,
        max(case when order_status = 'C' then message_sent_at end) over (
            partition by source_name, order_key
        ) as order_corrected_at
    from renamed

)

select
    source_name,
    message_control_id,
    segment_position,
    observation_index,
    observation_set_id,
    order_key,
    filler_order_number,
    filler_order_namespace,
    placer_order_number,
    placer_order_namespace,
    patient_key,
    org_unit_code,
    org_unit_name,
    performing_lab_code,
    sending_lab_code,
    sending_lab_name,
    test_code,
    test_name,
    test_system,
    order_test_code,
    value_type,
    specimen_type_code,
    specimen_type_name,
    specimen_reject_reason_code,
    specimen_reject_reason,
    result_status,
    order_status,
    interpretation,
    patient_sex,
    patient_age_band,
    patient_birth_year,
    value_text,
    value_code,
    value_numeric,
    value_comparator,
    units,
    reference_range,
    is_specimen_rejected,
    is_corrected,
    message_sent_at,
    collected_at,
    received_at,
    resulted_at,
    reported_at,
    landed_at
from ranked
where recency_rank = 1
    and (order_corrected_at is null or message_sent_at >= order_corrected_at)
