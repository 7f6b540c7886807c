{#- One row per source, facility and assessment year; the most recently landed valid row wins.
    Every readiness tracer item becomes a boolean has_<item>: true for yes, false for no, null
    when the item was not assessed. -#}
{%- set readiness_items = [
    'amen_power', 'amen_improved_water_source', 'amen_consultation_room_privacy',
    'amen_client_sanitation', 'amen_communication_equipment', 'amen_computer_email_internet',
    'amen_emergency_transport',
    'equip_adult_scale', 'equip_child_scale', 'equip_thermometer', 'equip_stethoscope',
    'equip_bp_apparatus', 'equip_light_source',
    'prec_sharps_final_disposal', 'prec_infectious_waste_final_disposal',
    'prec_sharps_storage', 'prec_infectious_waste_storage', 'prec_disinfectant',
    'prec_single_use_syringes', 'prec_soap_water_or_handrub', 'prec_latex_gloves',
    'prec_precautions_guidelines',
    'diag_haemoglobin', 'diag_blood_glucose', 'diag_malaria_rdt_or_microscopy',
    'diag_urine_dipstick_protein', 'diag_urine_dipstick_glucose', 'diag_hiv_rdt',
    'diag_syphilis_rdt', 'diag_urine_pregnancy_test',
    'med_amitriptyline', 'med_amlodipine', 'med_amoxicillin', 'med_ampicillin_inj',
    'med_beclometasone_inhaler', 'med_bisoprolol', 'med_carbamazepine', 'med_ceftriaxone_inj',
    'med_diazepam', 'med_enalapril', 'med_fluoxetine', 'med_gentamicin_inj',
    'med_glibenclamide', 'med_haloperidol', 'med_ibuprofen', 'med_insulin_regular',
    'med_magnesium_sulphate_inj', 'med_metformin', 'med_omeprazole', 'med_ors',
    'med_oxytocin_inj', 'med_salbutamol_inhaler', 'med_simvastatin', 'med_hydrochlorothiazide',
    'med_zinc_sulphate'
] -%}

with source as (

    select
        *,
        row_number() over (
            partition by source_name, facility_code, period
            order by landed_at desc, source_file desc, cast(source_row as integer) desc
        ) as recency_rank
    from {{ source('tabular', 'facility_assessments') }}
    where validation_status = 'valid' and not is_deleted

),

renamed as (

    select
        -- ids and codes
        facility_code as org_unit_code,
        period as period_id,
        source_name,
        source_file,
        cast(source_row as integer) as source_row,
        batch_id,

        -- descriptors
        facility_name,
        facility_type,

        -- readiness tracer items (yes/no or true/false, validated before staging)
        {%- for item in readiness_items %}
        case
            when lower(trim({{ item }})) in ('yes', 'true') then true
            when lower(trim({{ item }})) in ('no', 'false') then false
        end as has_{{ item }},
        {%- endfor %}

        -- numerics
        cast({{ hp_try_cast_double('inpatient_beds') }} as bigint) as inpatient_beds,
        comment,

        -- dates and timestamps
        cast({{ hp_try_cast_timestamp('assessment_date') }} as date) as assessment_date,
        landed_at

    from source
    where recency_rank = 1

)

select * from renamed
