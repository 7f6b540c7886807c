{#- Validation rules (seed validation_rules) violated per org unit and period. Every
    evaluation, violated or not, is in intermediate.int_validation_rule_results. -#}
select
    rule_id,
    rule_name,
    importance,
    org_unit_id,
    period_id,
    period_type,
    left_side,
    operator,
    right_side,
    left_value,
    right_value
from {{ ref('int_validation_rule_results') }}
where is_violation
