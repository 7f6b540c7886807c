{#- SARA facility assessments: one row per source, facility and year, with the WHO SARA
    general service readiness scores (0-100): each domain score is the share of its tracer
    items available among those assessed, and the readiness index is the mean of the five
    domain scores (WHO SARA reference manual, 2015). -#}
{%- set domains = {
    'basic_amenities': ['amen_power', 'amen_improved_water_source', 'amen_consultation_room_privacy',
        'amen_client_sanitation', 'amen_communication_equipment', 'amen_computer_email_internet',
        'amen_emergency_transport'],
    'basic_equipment': ['equip_adult_scale', 'equip_child_scale', 'equip_thermometer',
        'equip_stethoscope', 'equip_bp_apparatus', 'equip_light_source'],
    'standard_precautions': ['prec_sharps_final_disposal', 'prec_infectious_waste_final_disposal',
        'prec_sharps_storage', 'prec_infectious_waste_storage', 'prec_disinfectant',
        'prec_single_use_syringes', 'prec_soap_water_or_handrub', 'prec_latex_gloves',
        'prec_precautions_guidelines'],
    'diagnostic_capacity': ['diag_haemoglobin', 'diag_blood_glucose', 'diag_malaria_rdt_or_microscopy',
        'diag_urine_dipstick_protein', 'diag_urine_dipstick_glucose', 'diag_hiv_rdt',
        'diag_syphilis_rdt', 'diag_urine_pregnancy_test'],
    'essential_medicines': ['med_amitriptyline', 'med_amlodipine', 'med_amoxicillin',
        'med_ampicillin_inj', 'med_beclometasone_inhaler', 'med_bisoprolol', 'med_carbamazepine',
        'med_ceftriaxone_inj', 'med_diazepam', 'med_enalapril', 'med_fluoxetine',
        'med_gentamicin_inj', 'med_glibenclamide', 'med_haloperidol', 'med_ibuprofen',
        'med_insulin_regular', 'med_magnesium_sulphate_inj', 'med_metformin', 'med_omeprazole',
        'med_ors', 'med_oxytocin_inj', 'med_salbutamol_inhaler', 'med_simvastatin',
        'med_hydrochlorothiazide', 'med_zinc_sulphate'],
} -%}

with scored as (

    select
        a.source_name,
        o.org_unit_id,
        a.period_id,
        a.assessment_date,
        a.facility_type,
        a.inpatient_beds
        {%- for domain, items in domains.items() %},
        100.0 * (
            {%- for item in items %}
            case when a.has_{{ item }} then 1 else 0 end{{ ' +' if not loop.last }}
            {%- endfor %}
        ) / nullif(
            {%- for item in items %}
            case when a.has_{{ item }} is not null then 1 else 0 end{{ ' +' if not loop.last }}
            {%- endfor %}
        , 0) as {{ domain }}_score
        {%- endfor %}
    from {{ ref('stg_tabular__facility_assessments') }} as a
    join {{ ref('int_org_units') }} as o on o.code = a.org_unit_code

)

select
    *,
    ({% for domain in domains %}{{ domain }}_score{{ ' + ' if not loop.last }}{% endfor %}) / 5.0
        as readiness_index
from scored
