{#- Laboratory results (HL7 v2 ORU^R01), one row per order and test with its latest status:
    stg_hl7v2__results already keeps only the latest message per order and test (a
    corrected result replaces the original; the history stays in raw). Adds the org unit,
    the result's class (positive / suppressed) and the turnaround from collection to result.
    Rejected specimens are rows with no value and is_specimen_rejected true. FHIR lab
    Observations (category laboratory) would join here; the EMRs healthpipe reads so far send
    vital signs only, so the laboratory feed is HL7 alone. -#}
{%- set positive_codes = ['30020004', '260373001', '75953000', '10828004'] -%}
{%- set negative_codes = ['260415000', '260385009'] -%}

with results as (

    select * from {{ ref('stg_hl7v2__results') }}

),

org_units as (

    select org_unit_id, code from {{ ref('int_org_units') }}

)

select
    r.source_name || ':' || r.order_key || ':' || coalesce(r.test_code, '') as lab_result_key,
    r.source_name,
    r.order_key,
    r.test_code,
    r.test_name,
    r.patient_key,
    o.org_unit_id,
    r.specimen_type_code,
    r.collected_at,
    r.received_at,
    r.resulted_at,
    cast(r.collected_at as date) as collected_date,
    cast(r.resulted_at as date) as resulted_date,
    r.result_status,
    r.value_code,
    r.value_numeric,
    r.value_comparator,
    r.units,
    r.interpretation,
    -- SNOMED CT findings: organism or antibody detected, or not (equivocal stays null).
    case
        when r.value_code in ('{{ positive_codes | join("', '") }}') then true
        when r.value_code in ('{{ negative_codes | join("', '") }}') then false
    end as is_positive,
    -- HIV-1 viral load (LOINC 20447-9): suppressed below 1,000 copies/mL (WHO 2021);
    -- "<20" (below the limit of detection) counts as suppressed.
    case
        when r.test_code = '20447-9' and r.value_numeric is not null
            then r.value_numeric < 1000
    end as is_suppressed,
    r.is_specimen_rejected,
    r.is_corrected,
    case
        when not r.is_specimen_rejected
            then {{ hp_hours_between('r.collected_at', 'r.resulted_at') }}
    end as turnaround_hours
from results as r
join org_units as o on o.code = r.org_unit_code
